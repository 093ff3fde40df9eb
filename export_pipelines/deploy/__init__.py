"""Running the service: the local S3 server (SeaweedFS), the demo warehouse, and the dev deployment
that `make dev` starts.

May import any wing below it: `settings`, `engine`, `store`, `cache`, `orchestration`, `service`.
"""
