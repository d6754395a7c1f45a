"""The paper profile: emotion2vec, wav2vec2 valence-arousal, WavLM ECAPA-TDNN speaker, AutoPCP, from a local model
folder.
"""
