"""Prosody models shared by both profiles: silero-vad speech segments and Praat syllable nuclei (Pause, Rate)."""
