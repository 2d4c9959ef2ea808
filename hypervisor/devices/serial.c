/* SPDX-License-Identifier: Apache-2.0 */
#include "serial.h"
#include "bus.h"

#include <string.h>

/* IER bits */
#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI 0x08  /* modem status */
/* IIR values */
#define IIR_NO_INT 0x01
#define IIR_RLSI 0x06
#define IIR_RDI 0x04
#define IIR_THRI 0x02
#define IIR_FIFO_ON 0xc0
/* FCR bits */
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RCVR 0x02
/* LCR bits */
#define LCR_DLAB 0x80
/* MCR bits */
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
/* LSR bits */
#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
/* MSR bits */
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

void serial_init(struct serial *s, const struct serial_ops *ops, void *opaque)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->ops = ops;
	s->opaque = opaque;
	s->mcr = MCR_OUT2;
	s->dll = 0x0c; /* 9600 baud, as a PC BIOS would leave it */
}

void serial_destroy(struct serial *s)
{
	pthread_mutex_destroy(&s->lock);
}

/* The highest-priority pending interrupt, as IIR reports it (without the
 * FIFO bits). */
static uint8_t serial_iir(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && s->overrun)
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && s->rx_count)
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thre_pending)
		return IIR_THRI;
	return IIR_NO_INT;
}

/* Recompute the line level; call with the lock held.  On a PC the UART's
 * interrupt only reaches the PIC when OUT2 is set. */
static void serial_update_irq(struct serial *s)
{
	bool level = serial_iir(s) != IIR_NO_INT && (s->mcr & MCR_OUT2);

	if (level != s->irq_level) {
		s->irq_level = level;
		if (s->ops && s->ops->set_irq)
			s->ops->set_irq(s->opaque, level);
	}
}

static void rx_push(struct serial *s, uint8_t c)
{
	if (s->rx_count == SERIAL_RX_FIFO) {
		s->overrun = true;
		return;
	}
	s->rx[(s->rx_head + s->rx_count) % SERIAL_RX_FIFO] = c;
	s->rx_count++;
}

uint8_t serial_read(struct serial *s, unsigned off)
{
	uint8_t v = 0xff;
	bool wake = false;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
			break;
		}
		v = 0;
		if (s->rx_count) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % SERIAL_RX_FIFO;
			s->rx_count--;
			if (s->rx_was_full) {
				s->rx_was_full = false;
				wake = true;
			}
		}
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR_FCR:
		v = serial_iir(s);
		/* Reading IIR acknowledges a THR-empty interrupt it reports. */
		if (v == IIR_THRI)
			s->thre_pending = false;
		if (s->fcr & FCR_ENABLE)
			v |= IIR_FIFO_ON;
		break;
	case UART_LCR:
		v = s->lcr;
		break;
	case UART_MCR:
		v = s->mcr;
		break;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT;
		if (s->rx_count)
			v |= LSR_DR;
		if (s->overrun)
			v |= LSR_OE;
		s->overrun = false; /* reading LSR clears the error bits */
		break;
	case UART_MSR:
		if (s->mcr & MCR_LOOP) {
			/* Loopback wires the modem outputs to the inputs. */
			v = 0;
			if (s->mcr & MCR_RTS)
				v |= MSR_CTS;
			if (s->mcr & MCR_DTR)
				v |= MSR_DSR;
			if (s->mcr & MCR_OUT1)
				v |= MSR_RI;
			if (s->mcr & MCR_OUT2)
				v |= MSR_DCD;
		} else {
			v = MSR_DCD | MSR_DSR | MSR_CTS;
		}
		break;
	case UART_SCR:
		v = s->scr;
		break;
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	if (wake && s->ops && s->ops->rx_ready)
		s->ops->rx_ready(s->opaque);
	return v;
}

void serial_write(struct serial *s, unsigned off, uint8_t val)
{
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = val;
			break;
		}
		if (s->mcr & MCR_LOOP)
			rx_push(s, val);
		else if (s->ops && s->ops->tx)
			s->ops->tx(s->opaque, val);
		/* The byte left at once: the holding register is empty again. */
		s->thre_pending = true;
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = val;
			break;
		}
		/* Enabling THRI while the holding register is empty raises the
		 * interrupt at once, as a 16550 does; Linux probes for this. */
		if ((val & IER_THRI) && !(s->ier & IER_THRI))
			s->thre_pending = true;
		s->ier = val & 0x0f;
		break;
	case UART_IIR_FCR:
		s->fcr = val & 0xc9;
		if (val & FCR_CLEAR_RCVR) {
			s->rx_head = s->rx_count = 0;
			s->overrun = false;
		}
		break;
	case UART_LCR:
		s->lcr = val;
		break;
	case UART_MCR:
		s->mcr = val & 0x1f;
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* read-only */
	case UART_SCR:
		s->scr = val;
		break;
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	/* In loopback the line is disconnected from the outside world. */
	if (!(s->mcr & MCR_LOOP)) {
		while (n < len && s->rx_count < SERIAL_RX_FIFO)
			rx_push(s, buf[n++]);
		if (n < len)
			s->rx_was_full = true;
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void serial_bus_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = off + i < SERIAL_NPORTS ? serial_read(opaque, off + i) : 0xff;
}

static void serial_bus_write(void *opaque, uint64_t off, const uint8_t *data,
			     unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		if (off + i < SERIAL_NPORTS)
			serial_write(opaque, off + i, data[i]);
}

const struct bus_dev_ops serial_bus_ops = {
	.read = serial_bus_read,
	.write = serial_bus_write,
};
