"""The annotators' neural networks (the ControlNet preprocessors that need downloaded weights, §3.3), written here so
that each weight file loads strictly into our own torch modules through the restricted unpickler. One module per
network family; `loaded_nets` loads them and keeps a few loaded."""
