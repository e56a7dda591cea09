"""LLM annotators: model catalog, prompts, the llama.cpp engine and the cached annotator."""
