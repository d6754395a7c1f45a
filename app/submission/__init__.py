"""Intake of new jobs: multipart forms, manifest and archive checks, uploads stored to the blob store."""
