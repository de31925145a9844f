package dev.silt.clients;

import org.apache.kafka.clients.admin.Admin;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One silt broker per test class: started before the class's first test,
 * stopped (exit code 0 on SIGTERM required) after its last. Register it with
 * {@code @RegisterExtension static final BrokerExtension silt = new BrokerExtension();}.
 */
final class BrokerExtension implements BeforeAllCallback, AfterAllCallback {
    private SiltBroker broker;
    private Admin admin;

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        broker = SiltBroker.start();
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        try {
            if (admin != null) {
                admin.close();
            }
        } finally {
            if (broker != null) {
                broker.close();
            }
        }
    }

    SiltBroker broker() {
        return broker;
    }

    /** An Admin client for the class, created on first use and closed with the broker. */
    synchronized Admin admin() {
        if (admin == null) {
            admin = Clients.admin(broker);
        }
        return admin;
    }
}
