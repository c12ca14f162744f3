/* Stands in for libgupnp-igd-1.0.so.4 (same SONAME, found first through LD_LIBRARY_PATH) in the
 * Meetecho whip-client test only. The real library pulls libgupnp-1.6 -> libsoup-3.0 into a binary
 * linked against libsoup-2.4, and libsoup aborts the process when it finds both. These are the four
 * symbols libnice 0.1.21 imports. libnice treats a NULL from gupnp_simple_igd_thread_new as "no UPnP
 * agent" and then never calls the other three (every use is behind `if (agent->upnp)`); they exist
 * only so the dynamic linker resolves libnice. What is lost is UPnP IGD port mapping, which needs a
 * router on the LAN and is useless on loopback. */
#include <stddef.h>

void *gupnp_simple_igd_thread_new(void) { return NULL; }

/* GType 0 is G_TYPE_INVALID: a cast check against it would fail loudly rather than pass silently. */
unsigned long gupnp_simple_igd_get_type(void) { return 0; }

void gupnp_simple_igd_add_port(void) {}

void gupnp_simple_igd_remove_port_local(void) {}
