"""A1111's interrogators: "Interrogate CLIP" (BLIP caption + CLIP-ranked category phrases) and "Interrogate
DeepBooru" (DeepDanbooru tags). Engine level: no face imports it back, it imports no face (.importlinter)."""
