"""Flow matching (rectified flow) in the released SAMA / DiffSynth convention:
x_σ = (1 − σ)·x0 + σ·ε, the model sees t = 1000·σ and predicts v = ε − x0."""
