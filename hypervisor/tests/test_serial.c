/* SPDX-License-Identifier: Apache-2.0 */
/* The 16550 model: the register behaviour Linux's 8250 driver relies on. */
#include "check.h"
#include "devices/serial.h"

#include <string.h>

static int irq_level, irq_changes, rx_ready_calls;
static char out[64];
static size_t out_len;

static void set_irq(void *o, bool level) { irq_level = level; irq_changes++; }
static void tx(void *o, uint8_t c) { if (out_len < sizeof(out)) out[out_len++] = c; }
static void rx_ready(void *o) { rx_ready_calls++; }

static const struct serial_ops ops = { set_irq, tx, rx_ready };

static void test_scratch_and_divisor(void)
{
	struct serial s;

	serial_init(&s, &ops, NULL);
	serial_write(&s, UART_SCR, 0xa5);
	CHECK_EQ(serial_read(&s, UART_SCR), 0xa5);
	/* DLAB switches offsets 0 and 1 to the divisor latch. */
	serial_write(&s, UART_LCR, 0x83);
	serial_write(&s, UART_RBR_THR, 0x01);
	serial_write(&s, UART_IER, 0x00);
	CHECK_EQ(serial_read(&s, UART_RBR_THR), 0x01);
	CHECK_EQ(serial_read(&s, UART_IER), 0x00);
	serial_write(&s, UART_LCR, 0x03);
	CHECK_EQ(serial_read(&s, UART_LCR), 0x03);
	CHECK_EQ(serial_read(&s, UART_IER), 0x00); /* IER untouched */
	CHECK_EQ(out_len, 0); /* divisor writes are not output */
	serial_destroy(&s);
}

static void test_transmit_and_thre_interrupt(void)
{
	struct serial s;

	serial_init(&s, &ops, NULL);
	out_len = 0;
	irq_level = 0;
	CHECK_EQ(serial_read(&s, UART_LSR) & 0x60, 0x60); /* THRE | TEMT */
	CHECK_EQ(serial_read(&s, UART_IIR_FCR) & 0x0f, 0x01); /* none pending */
	/* Enabling THRI with an empty THR raises the interrupt at once. */
	serial_write(&s, UART_IER, 0x02);
	CHECK_EQ(irq_level, 1);
	CHECK_EQ(serial_read(&s, UART_IIR_FCR) & 0x0f, 0x02);
	/* Reading IIR acknowledged it. */
	CHECK_EQ(irq_level, 0);
	CHECK_EQ(serial_read(&s, UART_IIR_FCR) & 0x0f, 0x01);
	serial_write(&s, UART_RBR_THR, 'h');
	serial_write(&s, UART_RBR_THR, 'i');
	CHECK_EQ(out_len, 2);
	CHECK(memcmp(out, "hi", 2) == 0);
	CHECK_EQ(irq_level, 1); /* THR empty again */
	serial_write(&s, UART_IER, 0x00);
	CHECK_EQ(irq_level, 0);
	/* Without OUT2 the line never reaches the interrupt controller. */
	serial_write(&s, UART_MCR, 0x00);
	serial_write(&s, UART_IER, 0x02);
	CHECK_EQ(irq_level, 0);
	serial_destroy(&s);
}

static void test_receive(void)
{
	struct serial s;
	uint8_t big[SERIAL_RX_FIFO + 10];

	serial_init(&s, &ops, NULL);
	irq_level = 0;
	rx_ready_calls = 0;
	serial_write(&s, UART_IER, 0x01);
	CHECK_EQ(irq_level, 0);
	CHECK_EQ(serial_receive(&s, (const uint8_t *)"ab", 2), 2);
	CHECK_EQ(irq_level, 1);
	CHECK_EQ(serial_read(&s, UART_IIR_FCR) & 0x0f, 0x04);
	CHECK_EQ(serial_read(&s, UART_LSR) & 0x01, 0x01);
	CHECK_EQ(serial_read(&s, UART_RBR_THR), 'a');
	CHECK_EQ(serial_read(&s, UART_RBR_THR), 'b');
	CHECK_EQ(serial_read(&s, UART_LSR) & 0x01, 0x00);
	CHECK_EQ(irq_level, 0);
	/* A full FIFO refuses the rest and asks to be woken when drained. */
	memset(big, 'x', sizeof(big));
	CHECK_EQ(serial_receive(&s, big, sizeof(big)), SERIAL_RX_FIFO);
	CHECK_EQ(rx_ready_calls, 0);
	serial_read(&s, UART_RBR_THR);
	CHECK_EQ(rx_ready_calls, 1);
	/* FCR can clear the receive FIFO. */
	serial_write(&s, UART_IIR_FCR, 0x03);
	CHECK_EQ(serial_read(&s, UART_LSR) & 0x01, 0x00);
	CHECK_EQ(serial_read(&s, UART_IIR_FCR) & 0xc0, 0xc0); /* FIFOs on */
	serial_destroy(&s);
}

static void test_loopback(void)
{
	struct serial s;

	serial_init(&s, &ops, NULL);
	out_len = 0;
	/* The 8250 driver's probe: loopback with RTS and OUT2 must show CTS
	 * and DCD in MSR. */
	serial_write(&s, UART_MCR, 0x10 | 0x0a);
	CHECK_EQ(serial_read(&s, UART_MSR) & 0xf0, 0x90);
	serial_write(&s, UART_RBR_THR, 'z');
	CHECK_EQ(out_len, 0);
	CHECK_EQ(serial_read(&s, UART_RBR_THR), 'z');
	serial_write(&s, UART_MCR, 0x08);
	CHECK_EQ(serial_read(&s, UART_MSR) & 0xb0, 0xb0); /* DCD DSR CTS */
	serial_destroy(&s);
}

int main(void)
{
	test_scratch_and_divisor();
	test_transmit_and_thre_interrupt();
	test_receive();
	test_loopback();
	return 0;
}
