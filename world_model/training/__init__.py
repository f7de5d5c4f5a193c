"""How the world model is trained: the latent cache, the DiT loop, the autoencoder's loop, and ablations of
DiT recipes. Imports model/ (an ablation also judges each variant with evaluation/)."""
