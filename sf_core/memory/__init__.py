"""Memory: the peak of a generation run predicted before it runs (`plan`; python -m sf_core.memory.plan) and
measured from the allocator's events to check the prediction (`measure`). Importing loads nothing.
"""
