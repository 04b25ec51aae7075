# Makes conf/ the package alexnet_lab.conf (see pyproject.toml), so Hydra finds it in every install.
