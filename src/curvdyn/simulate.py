def simulate(*a, **k):
    raise NotImplementedError
class Trajectory: pass
