"""The world model itself: autoencoder, DiT, diffusion process, ego-motion warp, their configs, what a
checkpoint holds, and WorldModelEnv, the learned game behind the real env's face. Imports data/ only."""
