"""`tether deploy`: a served policy that keeps learning from its users, version by version, gated and rolled back.

config (what is served, watched, learned) -> store (the deployment folder) -> serving (versions, batches,
live monitors, rollback) -> app (the OpenAI-compatible HTTP face) ; learner (updates with TRL) -> gate.
"""
