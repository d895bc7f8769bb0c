"""The embedded llama.cpp engine. The gateway imports only what runs on its side (supervisor.py, protocol.py,
toolcalls.py, locate.py); the model itself (worker.py, jobs.py, prompt.py, grammar.py) lives in the engine
process (child.py), so the gateway never loads llama.cpp."""
