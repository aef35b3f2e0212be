"""Flows: the OpenFlow model, the expression engine, the pure transition function, flow state."""
