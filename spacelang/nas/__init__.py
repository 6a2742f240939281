"""Task-independent architecture search over a spec's supernet.

`strategies` (darts1, darts2, gdas as registered objects), `penalty` (the complexity
term) and `search` (the driver: a supernet, a task, the runtime loop, the derived spec).
"""
