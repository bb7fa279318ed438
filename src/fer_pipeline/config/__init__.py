"""How parameters are read and checked: Kedro's config loader arguments, and the base
class of every typed parameter block."""
