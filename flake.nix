{
  description = "tickerlake: hourly Binance prices into a Parquet lake with incremental DuckDB indicators";

  # `nix develop` then `just up` (the compose stack) or `just demo` (offline, no Docker).
  # `nix build` builds the tickerlake binary from Cargo.lock (result/bin/tickerlake).
  # CI checks that this file parses (`nix-instantiate --parse flake.nix`); nothing here is
  # evaluated against nixpkgs in CI, as the machines have no Nix store with it.

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
        cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
        # What the bundled DuckDB (C++, via the cc crate) and aws-lc (rustls' crypto) build with.
        buildTools = with pkgs; [ cmake pkg-config perl ];
      in
      {
        packages.default = pkgs.rustPlatform.buildRustPackage {
          pname = cargoToml.package.name;
          version = cargoToml.package.version;
          src = pkgs.lib.cleanSourceWith {
            src = ./.;
            filter = path: type:
              let base = baseNameOf path; in
              !(builtins.elem base [ "target" "lake" ".git" "result" ]);
          };
          cargoLock.lockFile = ./Cargo.lock;
          # .cargo/config.toml pins x86_64-unknown-linux-gnu for the developers' shared build
          # cache; Nix builds for the system at hand.
          postPatch = ''
            rm -f .cargo/config.toml
          '';
          nativeBuildInputs = buildTools;
          cargoBuildFlags = [ "--bin" "tickerlake" ];
          # The tests need S3 emulators and Docker; they run with `just test`, not in the sandbox.
          doCheck = false;
          meta = {
            description = cargoToml.package.description;
            license = pkgs.lib.licenses.mit;
            mainProgram = "tickerlake";
          };
        };

        apps.default = flake-utils.lib.mkApp { drv = self.packages.${system}.default; };

        devShells.default = pkgs.mkShell {
          packages = (with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            rust-analyzer
            just
            duckdb # ad-hoc SQL over ./lake
            awscli2
            python3 # the S3 emulators' virtualenvs (./dev emulators) and the stack test
            python3Packages.pyyaml
            docker-client
            docker-compose
            postgresql # psql, to query `tickerlake serve`
            curl
            time
          ]) ++ buildTools ++ pkgs.lib.optionals pkgs.stdenv.isLinux [ pkgs.debootstrap ];
          shellHook = ''
            export CARGO_TARGET_DIR="''${CARGO_TARGET_DIR:-$HOME/.cache/tickerlake-target}"
            echo "tickerlake dev shell. Next: just up (the stack in Docker: Grafana on http://127.0.0.1:3000),"
            echo "or just demo (offline, no Docker); just lists every recipe."
          '';
        };
      });
}
