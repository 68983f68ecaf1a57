"""The model: ClassWrapper (a router's classifier and M branches), the Class-Module,
weight sharing, and loading / saving."""
