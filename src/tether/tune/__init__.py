"""What pays, and the TRL wiring: `config` (the tune config), `rewards` (the constitution as
a TRL reward function, and the reward terms beside it), `run` (`tether tune`: run
directory -> models -> judges -> TRL trainer -> final adapter).
"""
