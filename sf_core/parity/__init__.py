"""Numerical parity with the official code on recorded fixtures: the fixture reader (`fixture`), Self Forcing
(`official`; `python -m sf_core.parity FIXTURE`), the other families (`families`, `replay`). Importing loads
nothing.
"""
