"""Models: loading, adapters, the tiny default, GGUF import, SFT set-up, resumable training, generation backends."""
