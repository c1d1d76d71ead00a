"""Writing variants to files: HF safetensors directories, GGUF, sparse-aware layouts."""
