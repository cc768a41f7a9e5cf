"""The demo model: a small latent diffusion model trained from scratch on procedural shape scenes.

Modules:
  data      scene generator, captions, held-out split (numpy only)
  analysis  pixel analysis of generated images (colour / position / shape / size; numpy only)
  common    device, seeds, atomic checkpoints, CSV logs, progress bars, sample grids
  models    component configs (AutoencoderKL, UNet2DConditionModel, CLIPTextModel)
  vae       stage 1: autoencoder training (+ the f4/f8 comparison)
  unet      stage 2: latent cache, UNet + text encoder training, sampling
  export    single-file LDM checkpoint (fp16 safetensors) + yaml
  evaluate  held-out evaluation with pixel analysis
The command line lives in tools/train_demo_model.py (`python -m tools.train_demo_model --help`).
"""
