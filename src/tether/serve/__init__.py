"""`tether serve`: the constitution as a remote reward model for OpenRLHF and verl, with tether watching.

`runlog` (the run-like folder a service writes: every judged sample, one metrics line per
window of samples, detector trips; `tether report` and `tether detect` read it) <- `batching`
(concurrent requests gathered into one judge call on one worker thread; a batch is logged
and fsynced before any of its requests is answered) <- `app` (the FastAPI app: OpenRLHF's
`POST /get_reward`, `/health`, `/metrics`; strict input checks, one-line 400s) <- `cli_serve`.
`tether.verl` scores through the service, or with a local evaluator, for verl's reward loop.
"""
