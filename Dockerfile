# modelslab-sentinel: a static-enough release binary on a distroless, non-root runtime image.
#   docker build -t modelslab-sentinel .
#   docker run --rm -p 9477:9477 -e MODELSLAB_API_KEY=… modelslab-sentinel
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/modelslab-sentinel

# glibc and libgcc (the binary links them), CA certificates, a nonroot user (65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/modelslab-sentinel /usr/local/bin/modelslab-sentinel
COPY config/sentinel.yaml /etc/modelslab-sentinel/sentinel.yaml
USER 65532:65532
EXPOSE 9477 8080
ENV MODELSLAB_SENTINEL_CONFIG=/etc/modelslab-sentinel/sentinel.yaml
ENTRYPOINT ["/usr/local/bin/modelslab-sentinel"]
CMD ["run"]
