"""Extra networks: LoRA/LyCORIS, textual inversion, hypernetworks (engine level: no UI, no web framework)."""
