Routing scripts in Python (`[core] route_script`): `request_route`/`reply_route`/failure
routes over an API with Kamailio's function and pseudo-variable names; sbc's own policy
is such a script (`etc/routes_default.py`); reload swaps scripts safely; script errors
answer 500 and are counted.
