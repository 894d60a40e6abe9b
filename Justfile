# Recipes for Nix users (`nix develop` provides just); each delegates to ./dev, which works without just.

# Offline demo on the embedded lake, then the hourly service against the simulator.
up: demo

demo:
    ./dev demo

test *ARGS:
    ./dev test {{ARGS}}

bench:
    ./dev bench

emulators:
    ./dev emulators
