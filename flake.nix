{
  description = "tickerlake: hourly Binance prices into a Parquet lake with incremental DuckDB indicators";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
      in
      {
        devShells.default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            cargo-nextest
            just
            python3 # the S3 emulators' virtualenv (./dev emulators)
            duckdb # ad-hoc SQL over ./lake
            awscli2
            time
          ];
          shellHook = ''
            export CARGO_TARGET_DIR="''${CARGO_TARGET_DIR:-$HOME/.cache/tickerlake-target}"
          '';
        };
      });
}
