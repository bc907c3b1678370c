"""Low-rank adapters: the layer and its variants with an explicit merge (lora.py), their saved files
(adapter_file.py), PEFT's format (peft.py), many adapters of one base in one pass (many.py) and the list of
a directory's adapters (catalog.py)."""
