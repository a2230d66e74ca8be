"""`jaxmerge demo --vlm`: the paper's EvoVLM-JP experiment in miniature (an image-grounded VLM answering in one
language merged with a text model of another, scored on image questions in the second)."""
