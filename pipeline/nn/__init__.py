"""Networks shared by extraction and training: backbones and device helpers (torch)."""
