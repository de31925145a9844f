package dev.silt.clients;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * One real `silt broker` process ($SILT_BIN) with a fresh data dir in a temp
 * folder and its Kafka and HTTP listeners on 127.0.0.1 port 0. The bound Kafka
 * port is read from the "broker ready" line on stderr, as tests/silt_harness.py
 * does. {@link #close()} sends SIGTERM and requires exit code 0: a clean
 * shutdown is part of every test class.
 */
final class SiltBroker implements AutoCloseable {
    static final Duration READY_TIMEOUT = Duration.ofSeconds(60);
    static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);
    /** Lines of broker output kept for failure messages. */
    static final int LOG_LINES_MAX = 20_000;

    /**
     * Short group timers, as the Python suite's group tests use: no initial
     * rebalance delay, sessions as short as one second, and consumer-protocol
     * heartbeats every 500 ms so that reassignments take seconds.
     */
    static final Map<String, String> GROUP_ENV = Map.of(
            "SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0",
            "SILT_GROUPS__MIN_SESSION_TIMEOUT_MS", "1000",
            "SILT_GROUPS__CONSUMER_HEARTBEAT_INTERVAL_MS", "500",
            "SILT_GROUPS__CONSUMER_SESSION_TIMEOUT_MS", "10000");

    private static final Pattern READY = Pattern.compile(
            "broker ready.*kafka_listener=\"?([0-9.]+):(\\d+)\"?");
    private static final Pattern ANSI = Pattern.compile("\u001b\\[[0-9;]*[A-Za-z]");

    private final Path dataRoot;
    private final Process process;
    private final List<String> lines = new ArrayList<>();
    private final Thread drain;
    private String bootstrap;

    private SiltBroker(Path dataRoot, Process process) {
        this.dataRoot = dataRoot;
        this.process = process;
        this.drain = new Thread(this::drainOutput, "silt-output");
        this.drain.setDaemon(true);
        this.drain.start();
    }

    /** Starts a broker and waits for its readiness line. */
    static SiltBroker start() throws IOException, InterruptedException {
        String bin = System.getenv("SILT_BIN");
        if (bin == null || bin.isEmpty() || !Files.isExecutable(Path.of(bin))) {
            throw new IllegalStateException("SILT_BIN must name the silt binary (got " + bin
                    + "); tests/java/run sets it");
        }
        Path root = Files.createTempDirectory("silt-java-");
        ProcessBuilder pb = new ProcessBuilder(bin, "broker")
                .directory(root.toFile())
                .redirectErrorStream(true)
                .redirectInput(ProcessBuilder.Redirect.PIPE);
        Map<String, String> env = pb.environment();
        env.keySet().removeIf(k -> k.startsWith("SILT_"));
        // The readiness line is an INFO event; an inherited RUST_LOG=warn would hide it.
        env.remove("RUST_LOG");
        env.put("NO_COLOR", "1");
        env.put("RUST_BACKTRACE", "1");
        env.put("SILT_STORAGE__DATA_DIR", root.resolve("data").toString());
        env.put("SILT_KAFKA__LISTEN", "127.0.0.1:0");
        env.put("SILT_HTTP__LISTEN", "127.0.0.1:0");
        env.putAll(GROUP_ENV);
        SiltBroker broker = new SiltBroker(root, pb.start());
        broker.process.getOutputStream().close();
        broker.awaitReady();
        return broker;
    }

    String bootstrap() {
        return bootstrap;
    }

    private void drainOutput() {
        try (BufferedReader r = new BufferedReader(
                new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                String clean = ANSI.matcher(line).replaceAll("");
                synchronized (lines) {
                    lines.add(clean);
                    if (lines.size() > LOG_LINES_MAX) {
                        lines.subList(0, lines.size() - LOG_LINES_MAX).clear();
                    }
                    lines.notifyAll();
                }
            }
        } catch (IOException e) {
            // The JDK closes the pipe when the process exits; only an earlier failure is news.
            if (process.isAlive()) {
                synchronized (lines) {
                    lines.add("[output drain failed: " + e + "]");
                }
            }
        }
        synchronized (lines) {
            lines.notifyAll();
        }
    }

    private void awaitReady() throws InterruptedException {
        long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
        synchronized (lines) {
            int seen = 0;
            while (true) {
                for (; seen < lines.size(); seen++) {
                    Matcher m = READY.matcher(lines.get(seen));
                    if (m.find()) {
                        if (Integer.parseInt(m.group(2)) == 0) {
                            throw new IllegalStateException("broker advertised port 0: " + lines.get(seen));
                        }
                        bootstrap = m.group(1) + ":" + m.group(2);
                        return;
                    }
                }
                long left = deadline - System.nanoTime();
                if (!process.isAlive() || left <= 0) {
                    break;
                }
                lines.wait(Math.max(1, Math.min(TimeUnit.NANOSECONDS.toMillis(left), 500)));
            }
        }
        String why = process.isAlive()
                ? "no 'broker ready' line with kafka_listener= within " + READY_TIMEOUT
                : "broker exited with code " + process.exitValue() + " before 'broker ready'";
        process.destroyForcibly();
        throw new IllegalStateException(why + "\n" + logTail(60));
    }

    /** The last {@code n} lines the broker printed, for failure messages. */
    String logTail(int n) {
        synchronized (lines) {
            return String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()));
        }
    }

    /** Fails, with the broker's log, if the process has exited. */
    void assertAlive() {
        if (!process.isAlive()) {
            throw new AssertionError("silt exited with code " + process.exitValue() + "\n" + logTail(60));
        }
    }

    @Override
    public void close() throws Exception {
        try {
            if (!process.isAlive()) {
                throw new AssertionError("silt exited on its own with code " + process.exitValue()
                        + "\n" + logTail(60));
            }
            // SIGTERM through the handle: Process.destroy() would also close the pipes,
            // and the broker's shutdown log would be lost.
            process.toHandle().destroy();
            if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly().waitFor();
                throw new AssertionError("silt did not exit within " + STOP_TIMEOUT + " of SIGTERM\n"
                        + logTail(60));
            }
            drain.join(5_000);
            if (process.exitValue() != 0) {
                throw new AssertionError("silt exited with code " + process.exitValue()
                        + " on SIGTERM (expected 0)\n" + logTail(60));
            }
        } finally {
            deleteTree(dataRoot);
        }
    }

    private static void deleteTree(Path root) throws IOException {
        try (Stream<Path> walk = Files.walk(root)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
