"""Webhooks: callback URLs allowed and signed (callbacks), and their delivery with retries (delivery)."""
