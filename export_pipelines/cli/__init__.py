"""`export-pipelines`: the command line, a thin shell over the service and the deployment.

May import any wing.
"""
