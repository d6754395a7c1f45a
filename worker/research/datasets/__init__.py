"""Readers of published corpora, turned into emopres pairs files and SER manifests."""
