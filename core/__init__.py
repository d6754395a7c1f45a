"""The shared core below every layer: settings, storage (database, blob store, migrations), audio
decoding, feature cache and the pure metric functions. It imports nothing from app, worker or models."""

__version__ = "0.1.0"
