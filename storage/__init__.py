"""The object store (S3-compatible, or Azure Blob / GCS by URL): large logs, environment archives."""
