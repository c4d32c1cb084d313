"""Text in, tokens out: the byte tokenizer, the embedded corpus, text files and nanoGPT token files."""
