"""The benchmarks: each starts its own gateways, never the machine's own (see isolate_environment)."""

from kimi_gateway.testing import isolate_environment

isolate_environment()
