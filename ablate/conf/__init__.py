"""The config tree (Hydra's primary config module): a package, so that Hydra finds it in an installed wheel."""
