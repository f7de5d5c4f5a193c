"""How the world model is judged: the yardstick (scene metrics, place probe, control, image motion,
stability and its no-reference hold) on held-out play, rollouts, the report, learning curves and the play
benchmark. Imports model/."""
