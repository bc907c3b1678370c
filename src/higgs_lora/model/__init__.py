"""The network (network.py: the residual MLP, built from one ModelConfig) and its saved files
(model_file.py: safetensors + JSON, nothing unpickled)."""
