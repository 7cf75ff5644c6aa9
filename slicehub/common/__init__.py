"""What both sides of Slicehub need: the hub (spawners, quota service) and the notebook side
(kernel, server extension). A leaf: it imports nothing else of Slicehub, so a single-user image
needs only this package besides `slicehub.extensions`.
"""
