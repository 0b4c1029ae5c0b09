# modelslab-sentinel: a release binary on a distroless, non-root runtime image.
#
#   docker build -t modelslab-sentinel .
#   docker run --rm -p 9477:9477 -e MODELSLAB_API_KEY=… modelslab-sentinel
#
# The base images are build arguments, for registries of your own or where the public ones
# cannot be pulled:
#   --build-arg BUILD_IMAGE=…     a Rust toolchain on Debian bookworm (glibc of the runtime's age)
#   --build-arg RUNTIME_IMAGE=…   what distroless/cc holds: glibc, libgcc, CA certificates, a
#                                 nonroot user 65532, no shell
#
# Only the runtime, from a binary built elsewhere (no compiler in the build): give the directory
# that holds target/release/modelslab-sentinel as the `build` context, e.g.
#   cargo build --release --locked
#   podman build --build-context build=. --target runtime -t modelslab-sentinel .
# (`docker buildx build --build-context build=. --target runtime …` likewise).
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Dependencies first, so that source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY alerts ./alerts
COPY config ./config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/modelslab-sentinel \
    && mkdir -p /target/release && cp target/release/modelslab-sentinel /target/release/

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /target/release/modelslab-sentinel /usr/local/bin/modelslab-sentinel
COPY config/sentinel.yaml /etc/modelslab-sentinel/sentinel.yaml
USER 65532:65532
EXPOSE 9477 8080
ENV MODELSLAB_SENTINEL_CONFIG=/etc/modelslab-sentinel/sentinel.yaml
ENTRYPOINT ["/usr/local/bin/modelslab-sentinel"]
CMD ["run"]
