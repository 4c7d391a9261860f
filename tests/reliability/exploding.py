"""A model that unpickles fine and then fails while scoring (importable, so joblib can load it)."""


class ExplodingModel:
    def decision_function(self, X):
        raise RuntimeError("model exploded while scoring")
