"""What pays, and the TRL wiring: `config` (the tune config), `rewards` (the constitution as
a TRL reward function, and the reward terms beside it; several judges combined), `shaping` (what
the combined log-odds pay: raw, log-sigmoid, reference), `run` (`tether tune`: run
directory -> models -> judges -> TRL trainer -> final adapter).
"""
