/* SPDX-License-Identifier: Apache-2.0 */
/* A 16550A UART (the 8250 family register set) as the guest's console:
 * transmit is immediate (the transmitter is always empty), receive goes
 * through a FIFO fed by the console backend.  The device knows nothing of
 * KVM: it reports its interrupt line level and output bytes through
 * callbacks, so it can be unit-tested without a VM. */
#ifndef OVKVM_SERIAL_H
#define OVKVM_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ 4
#define SERIAL_NPORTS 8
#define SERIAL_RX_FIFO 256

/* Register offsets from the base port. */
enum {
	UART_RBR_THR = 0, /* DLL when LCR.DLAB */
	UART_IER = 1,     /* DLM when LCR.DLAB */
	UART_IIR_FCR = 2,
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

struct serial_ops {
	/* The interrupt line changed level. */
	void (*set_irq)(void *opaque, bool level);
	/* The guest transmitted `c`. */
	void (*tx)(void *opaque, uint8_t c);
	/* The receive FIFO has room again after having been full. */
	void (*rx_ready)(void *opaque);
};

struct serial {
	pthread_mutex_t lock;
	const struct serial_ops *ops;
	void *opaque;
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
	bool thre_pending; /* THR-empty interrupt raised, not yet acknowledged */
	bool overrun;
	bool irq_level;
	bool rx_was_full;
	uint8_t rx[SERIAL_RX_FIFO];
	unsigned rx_head, rx_count;
};

void serial_init(struct serial *s, const struct serial_ops *ops, void *opaque);
void serial_destroy(struct serial *s);

/* Guest port access at `off` (0..7) from the base. */
uint8_t serial_read(struct serial *s, unsigned off);
void serial_write(struct serial *s, unsigned off, uint8_t val);

/* Queue bytes typed on the console; returns how many fit in the FIFO. */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);

/* The bus ops for the port range. */
extern const struct bus_dev_ops serial_bus_ops;

#endif
