"""`python -m export_pipelines.cli`: the same as the `export-pipelines` command."""

from export_pipelines.cli.main import main

raise SystemExit(main())
