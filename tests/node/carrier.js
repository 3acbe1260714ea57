'use strict';
/*
 * A carrier SMSC stand-in for Bounceback's end-to-end tests, built on the npm
 * `smpp` package so that the proxy is exercised by code that is not our own.
 *
 * Usage: node carrier.js [--host H] [--port P] [--hex-ids] [--id-base N]
 *                        [--receipt-delay-ms MS] [--resp-delay-ms MS]
 *                        [--retry-ms MS] [--password PW] [--system-id ID]
 *                        [--default-outcome WORD] [--no-receipt-tlvs]
 *
 * It prints one JSON object per line on stdout, first {"op":"listening","port":P},
 * and reads one JSON command per line on stdin. Every reply to a command echoes
 * the command's "req" field, when it has one.
 *
 * Behaviour
 * - Any bind is accepted (unless --password is set and differs: ESME_RINVPASWD,
 *   or a bind_status was configured). The system_id is recorded per session.
 * - submit_sm gets the carrier's own message id: a decimal counter starting at
 *   --id-base (1000000000, so ids are 10 digits). With --hex-ids the
 *   submit_sm_resp carries the same number in lower-case hex while the receipt
 *   (text `id:` and receipted_message_id) carries the decimal form.
 * - After --receipt-delay-ms (counted from the submit_sm_resp) the message
 *   reaches its final state and, if registered_delivery asks for it (bits 1-0:
 *   1 = always, 2 = failure only, 3 = success only), a receipt is sent as
 *   deliver_sm esm_class 0x04 on a receiver/transceiver session bound with the
 *   same system_id (round robin). With no such session the receipt waits and
 *   goes out when one binds. A deliver_sm_resp with a non-zero status, or a
 *   session lost before the response, puts the receipt back for another try
 *   after --retry-ms.
 * - Receipt text (Appendix B layout, dates YYMMDDhhmm in UTC, ASCII bytes,
 *   data_coding 0):
 *     id:<decimal id> sub:001 dlvrd:<001|000> submit date:<d> done date:<d>
 *     stat:<STAT> err:<ERR> text:<first 20 characters of the message>
 *   Characters of the original text outside a GSM/ASCII-common printable set
 *   are written as '?'. TLVs: receipted_message_id (decimal), message_state,
 *   and network_error_code (type 3 = GSM, 2-octet MAP code) where the outcome
 *   has one; --no-receipt-tlvs leaves all TLVs out (text-only receipts).
 *
 * Outcomes (scripted per destination with {"op":"script"}; once a number's
 * script is used up, the default outcome applies):
 *   word            submit_sm_resp  receipt stat  err  message_state  network_error_code
 *   deliver         0x00            DELIVRD       000  2              -
 *   absent          0x00            UNDELIV       006  5              3/6  absentSubscriberSM
 *   unknown         0x00            UNDELIV       001  5              3/1  unknownSubscriber
 *   memory_full     0x00            UNDELIV       032  5              3/32 sm-DeliveryFailure
 *                                                                     (cause memoryCapacityExceeded,
 *                                                                     which SMPP 3.4 cannot carry)
 *   busy            0x00            UNDELIV       031  5              3/31 subscriberBusyForMT-SMS
 *   barred          0x00            UNDELIV       013  5              3/13 callBarred
 *   system_failure  0x00            UNDELIV       034  5              3/34 systemFailure
 *   expire          0x00            EXPIRED       000  3              -
 *   reject          0x00            REJECTD       000  8              -
 *   no_receipt      0x00            (none; the message stays ENROUTE)
 *   lost_receipt    0x00            (none, but the message reaches DELIVERED: only
 *                                   query_sm tells; a receipt_lost event is printed)
 *   throttle        0x58 ESME_RTHROTTLED     (no receipt)
 *   queue_full      0x14 ESME_RMSGQFUL       (no receipt)
 *   system_error    0x08 ESME_RSYSERR        (no receipt)
 *   submit_fail     0x45 ESME_RSUBMITFAIL    (no receipt)
 *   invalid_dest    0x0B ESME_RINVDSTADR     (no receipt)
 *   no_response     (no submit_sm_resp at all)
 *
 * Commands (stdin):
 *   {"op":"script","number":N,"outcomes":[WORD,...]}  -> {"op":"scripted",...}
 *   {"op":"counts"}               -> {"op":"counts","counts":{number:n},"total":n}
 *   {"op":"kick","graceful":bool} -> {"op":"kicked","sessions":n}   (carrier restart)
 *   {"op":"alert","number":N,"system_id":S?,"ms_availability_status":0?}
 *                                 -> {"op":"alert_sent","sessions":n}
 *   {"op":"config", receipt_delay_ms|resp_delay_ms|retry_ms|hex_ids|default_outcome|
 *                   password|bind_status|receipt_tlvs|query_sm: value}
 *                                 -> {"op":"configured",...}
 *     query_sm: how query_sm is answered: "answer" (the default: query_sm_resp with
 *     the message's state, or ESME_RINVMSGID for an unknown id), "generic_nack"
 *     (generic_nack ESME_RINVCMDID, what node-smpp sends for a command it does not
 *     know), "invcmdid" (query_sm_resp ESME_RINVCMDID) or "queryfail"
 *     (query_sm_resp ESME_RQUERYFAIL); the query event is printed in every case.
 *   {"op":"sessions"}             -> {"op":"sessions","sessions":[{system_id,bind}]}
 *   {"op":"outcomes"}             -> {"op":"outcomes","outcomes":{word:{...}}}
 *   {"op":"exit"}                 -> {"op":"bye"}, then the process ends
 * Events (stdout): listening, bind, submit, receipt, receipt_ack, receipt_pending,
 * receipt_lost, query (message_id, source_addr, source_addr_ton, source_addr_npi,
 * found, answer), cancel, enquire_link, unbind, session_closed, session_error. A submit
 * event's "outstanding" counts the session's submit_sm not yet answered,
 * this one included (with --resp-delay-ms it shows the client's window).
 */

const readline = require('readline');
const smpp = require('smpp');

// Report time fields and message bodies exactly as the client sent them.
delete smpp.commands.submit_sm.params.validity_period.filter;
delete smpp.commands.submit_sm.params.schedule_delivery_time.filter;
delete smpp.commands.submit_sm.params.short_message.filter;
delete smpp.tlvs.message_payload.filter;

const ESME = {
	ROK: 0x00,
	RINVBNDSTS: 0x04,
	RALYBND: 0x05,
	RSYSERR: 0x08,
	RINVDSTADR: 0x0B,
	RINVMSGID: 0x0C,
	RINVPASWD: 0x0E,
	RCANCELFAIL: 0x11,
	RMSGQFUL: 0x14,
	RINVCMDID: 0x03,
	RSUBMITFAIL: 0x45,
	RTHROTTLED: 0x58,
	RQUERYFAIL: 0x67,
};

const QUERY_ANSWERS = ['answer', 'generic_nack', 'invcmdid', 'queryfail'];

const OUTCOMES = {
	deliver: {status: ESME.ROK, stat: 'DELIVRD', err: '000', message_state: 2, network_error: null},
	absent: {status: ESME.ROK, stat: 'UNDELIV', err: '006', message_state: 5, network_error: [3, 6]},
	unknown: {status: ESME.ROK, stat: 'UNDELIV', err: '001', message_state: 5, network_error: [3, 1]},
	memory_full: {status: ESME.ROK, stat: 'UNDELIV', err: '032', message_state: 5, network_error: [3, 32]},
	busy: {status: ESME.ROK, stat: 'UNDELIV', err: '031', message_state: 5, network_error: [3, 31]},
	barred: {status: ESME.ROK, stat: 'UNDELIV', err: '013', message_state: 5, network_error: [3, 13]},
	system_failure: {status: ESME.ROK, stat: 'UNDELIV', err: '034', message_state: 5, network_error: [3, 34]},
	expire: {status: ESME.ROK, stat: 'EXPIRED', err: '000', message_state: 3, network_error: null},
	reject: {status: ESME.ROK, stat: 'REJECTD', err: '000', message_state: 8, network_error: null},
	no_receipt: {status: ESME.ROK, stat: null, err: null, message_state: null, network_error: null},
	lost_receipt: {status: ESME.ROK, stat: 'DELIVRD', err: '000', message_state: 2, network_error: null, lost: true},
	throttle: {status: ESME.RTHROTTLED, stat: null, err: null, message_state: null, network_error: null},
	queue_full: {status: ESME.RMSGQFUL, stat: null, err: null, message_state: null, network_error: null},
	system_error: {status: ESME.RSYSERR, stat: null, err: null, message_state: null, network_error: null},
	submit_fail: {status: ESME.RSUBMITFAIL, stat: null, err: null, message_state: null, network_error: null},
	invalid_dest: {status: ESME.RINVDSTADR, stat: null, err: null, message_state: null, network_error: null},
	no_response: {status: null, stat: null, err: null, message_state: null, network_error: null},
};

const ENROUTE = 1;
const DELETED = 4;

const settings = {
	host: '127.0.0.1',
	port: 0,
	hex_ids: false,
	id_base: 1000000000,
	receipt_delay_ms: 50,
	resp_delay_ms: 0,
	retry_ms: 100,
	password: null,
	system_id: 'carrier',
	default_outcome: 'deliver',
	receipt_tlvs: true,
	bind_status: 0,
	query_sm: 'answer',
};

function parseArgs(argv) {
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		const value = () => {
			if (i + 1 >= argv.length) {
				throw new Error('missing value for ' + arg);
			}
			return argv[++i];
		};
		switch (arg) {
			case '--host': settings.host = value(); break;
			case '--port': settings.port = Number(value()); break;
			case '--hex-ids': settings.hex_ids = true; break;
			case '--id-base': settings.id_base = Number(value()); break;
			case '--receipt-delay-ms': settings.receipt_delay_ms = Number(value()); break;
			case '--resp-delay-ms': settings.resp_delay_ms = Number(value()); break;
			case '--retry-ms': settings.retry_ms = Number(value()); break;
			case '--password': settings.password = value(); break;
			case '--system-id': settings.system_id = value(); break;
			case '--default-outcome': settings.default_outcome = checkWord(value()); break;
			case '--no-receipt-tlvs': settings.receipt_tlvs = false; break;
			default: throw new Error('unknown argument: ' + arg);
		}
	}
}

function checkWord(word) {
	if (!Object.prototype.hasOwnProperty.call(OUTCOMES, word)) {
		throw new Error('unknown outcome word: ' + word);
	}
	return word;
}

function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + '\n');
}

function reply(cmd, obj) {
	if (cmd && cmd.req !== undefined) {
		obj.req = cmd.req;
	}
	emit(obj);
}

const two = (n) => String(n).padStart(2, '0');

function receiptDate(d) {
	return two(d.getUTCFullYear() % 100) + two(d.getUTCMonth() + 1) + two(d.getUTCDate()) +
		two(d.getUTCHours()) + two(d.getUTCMinutes());
}

function absoluteTime(d) {
	// SMPP absolute time, UTC: YYMMDDhhmmsstnnp with offset 00.
	return receiptDate(d) + two(d.getUTCSeconds()) + String(Math.floor(d.getUTCMilliseconds() / 100)) + '00+';
}

// Decode a message body for reporting and for the receipt's text field.
function decodeBody(buf, dataCoding, esmClass) {
	if (!Buffer.isBuffer(buf)) {
		return {text: '', hex: '', udh: null};
	}
	let body = buf;
	let udh = null;
	if ((esmClass & 0x40) && body.length > 0) {
		const udhLength = body[0] + 1;
		udh = body.slice(0, udhLength).toString('hex');
		body = body.slice(udhLength);
	}
	let text;
	if (dataCoding === 0x08) {
		text = smpp.encodings.UCS2.decode(body);
	} else if (dataCoding === 0x00 || ((dataCoding & 0xF0) === 0xF0 && !(dataCoding & 0x04))) {
		text = smpp.gsmCoder.decode(body, 0);
	} else {
		text = body.toString('latin1');
	}
	return {text: text, hex: buf.toString('hex'), udh: udh};
}

function receiptText(text) {
	let out = '';
	for (const ch of text.slice(0, 20)) {
		out += /^[A-Za-z0-9 .,:;!?'"()*+\-\/=<>#%&]$/.test(ch) ? ch : '?';
	}
	return out;
}

function wantsReceipt(registeredDelivery, stat) {
	switch (registeredDelivery & 0x03) {
		case 1: return true;
		case 2: return stat !== 'DELIVRD';
		case 3: return stat === 'DELIVRD';
		default: return false;
	}
}

// --- state -------------------------------------------------------------------

let nextId = 0;
const scripts = new Map();   // destination -> remaining outcome words
const counts = new Map();    // destination -> submit_sm count
const messages = new Map();  // message id (either form) -> message record
const pending = new Map();   // system_id -> receipts waiting for a receiver
const sessions = new Set();  // session records
let roundRobin = 0;

function canReceive(info) {
	return info.bind === 'receiver' || info.bind === 'transceiver';
}

function canTransmit(info) {
	return info.bind === 'transmitter' || info.bind === 'transceiver';
}

function pickReceiver(systemId) {
	const candidates = [...sessions].filter((s) => canReceive(s) && s.systemId === systemId);
	if (candidates.length === 0) {
		return null;
	}
	roundRobin = (roundRobin + 1) % candidates.length;
	return candidates[roundRobin];
}

function queueReceipt(msg) {
	const info = pickReceiver(msg.systemId);
	if (info) {
		sendReceipt(info, msg);
		return;
	}
	if (!pending.has(msg.systemId)) {
		pending.set(msg.systemId, []);
	}
	pending.get(msg.systemId).push(msg);
	emit({op: 'receipt_pending', message_id: msg.respId, receipt_id: msg.receiptId, system_id: msg.systemId});
}

function flushPending(info) {
	const waiting = pending.get(info.systemId);
	if (!waiting || waiting.length === 0) {
		return;
	}
	pending.delete(info.systemId);
	for (const msg of waiting) {
		sendReceipt(info, msg);
	}
}

function sendReceipt(info, msg) {
	const outcome = OUTCOMES[msg.outcome];
	msg.attempts += 1;
	const text = 'id:' + msg.receiptId +
		' sub:001 dlvrd:' + (outcome.stat === 'DELIVRD' ? '001' : '000') +
		' submit date:' + receiptDate(msg.submitDate) +
		' done date:' + receiptDate(msg.finalDate) +
		' stat:' + outcome.stat + ' err:' + outcome.err +
		' text:' + receiptText(msg.text);
	const fields = {
		source_addr_ton: msg.destTon,
		source_addr_npi: msg.destNpi,
		source_addr: msg.destination,
		dest_addr_ton: msg.sourceTon,
		dest_addr_npi: msg.sourceNpi,
		destination_addr: msg.source,
		esm_class: 0x04,
		data_coding: 0x00,
		short_message: Buffer.from(text, 'latin1'),
	};
	if (settings.receipt_tlvs) {
		fields.receipted_message_id = msg.receiptId;
		fields.message_state = outcome.message_state;
		if (outcome.network_error) {
			const code = Buffer.alloc(3);
			code.writeUInt8(outcome.network_error[0], 0);
			code.writeUInt16BE(outcome.network_error[1], 1);
			fields.network_error_code = code;
		}
	}
	const token = {};
	info.inflight.set(token, msg);
	const sent = info.session.deliver_sm(fields, (resp) => {
		if (!info.inflight.delete(token)) {
			return;
		}
		emit({
			op: 'receipt_ack', message_id: msg.respId, receipt_id: msg.receiptId,
			status: resp.command_status, system_id: info.systemId,
		});
		if (resp.command_status !== ESME.ROK) {
			setTimeout(() => queueReceipt(msg), settings.retry_ms);
		}
	});
	if (!sent) {
		info.inflight.delete(token);
		setTimeout(() => queueReceipt(msg), settings.retry_ms);
		return;
	}
	emit({
		op: 'receipt', message_id: msg.respId, receipt_id: msg.receiptId, stat: outcome.stat,
		err: outcome.err, system_id: info.systemId, destination_addr: msg.destination,
		attempt: msg.attempts, short_message: text,
	});
}

function finalise(msg) {
	const outcome = OUTCOMES[msg.outcome];
	msg.timer = null;
	msg.state = outcome.message_state;
	msg.finalDate = new Date();
	if (outcome.lost) {
		emit({op: 'receipt_lost', message_id: msg.respId, receipt_id: msg.receiptId, system_id: msg.systemId});
		return;
	}
	if (wantsReceipt(msg.registeredDelivery, outcome.stat)) {
		queueReceipt(msg);
	}
}

// --- PDU handling --------------------------------------------------------------

const BIND_TYPES = {
	bind_transceiver: 'transceiver',
	bind_transmitter: 'transmitter',
	bind_receiver: 'receiver',
};

function onBind(info, pdu) {
	let status = ESME.ROK;
	if (info.bind) {
		status = ESME.RALYBND;
	} else if (settings.bind_status) {
		status = settings.bind_status;
	} else if (settings.password !== null && pdu.password !== settings.password) {
		status = ESME.RINVPASWD;
	}
	const bind = BIND_TYPES[pdu.command];
	emit({
		op: 'bind', bind: bind, system_id: pdu.system_id, password: pdu.password,
		system_type: pdu.system_type, interface_version: pdu.interface_version, status: status,
	});
	if (status !== ESME.ROK) {
		info.session.send(pdu.response({command_status: status}));
		return;
	}
	info.bind = bind;
	info.systemId = pdu.system_id;
	info.session.send(pdu.response({system_id: settings.system_id}));
	if (canReceive(info)) {
		flushPending(info);
	}
}

function onSubmit(info, pdu) {
	if (!canTransmit(info)) {
		info.session.send(pdu.response({command_status: ESME.RINVBNDSTS}));
		return;
	}
	const destination = pdu.destination_addr;
	info.outstanding += 1;
	counts.set(destination, (counts.get(destination) || 0) + 1);
	const script = scripts.get(destination);
	const word = script && script.length > 0 ? script.shift() : settings.default_outcome;
	const outcome = OUTCOMES[word];
	const body = Buffer.isBuffer(pdu.short_message) && pdu.short_message.length > 0 ?
		pdu.short_message : pdu.message_payload;
	const decoded = decodeBody(body, pdu.data_coding, pdu.esm_class);
	const event = {
		op: 'submit',
		system_id: info.systemId,
		destination_addr: destination,
		source_addr: pdu.source_addr,
		outcome: word,
		status: outcome.status,
		message_id: null,
		receipt_id: null,
		registered_delivery: pdu.registered_delivery,
		validity_period: pdu.validity_period,
		schedule_delivery_time: pdu.schedule_delivery_time,
		service_type: pdu.service_type,
		esm_class: pdu.esm_class,
		data_coding: pdu.data_coding,
		short_message: decoded.text,
		short_message_hex: decoded.hex,
		udh_hex: decoded.udh,
		payload_tlv: Buffer.isBuffer(pdu.message_payload),
		sequence_number: pdu.sequence_number,
		outstanding: info.outstanding,
	};
	if (outcome.status === null) {
		emit(event);
		return;
	}
	if (outcome.status !== ESME.ROK) {
		emit(event);
		info.outstanding -= 1;
		info.session.send(pdu.response({command_status: outcome.status}));
		return;
	}
	const number = settings.id_base + nextId++;
	const receiptId = String(number);
	const respId = settings.hex_ids ? number.toString(16) : receiptId;
	const msg = {
		respId: respId,
		receiptId: receiptId,
		outcome: word,
		systemId: info.systemId,
		destination: destination,
		destTon: pdu.dest_addr_ton,
		destNpi: pdu.dest_addr_npi,
		source: pdu.source_addr,
		sourceTon: pdu.source_addr_ton,
		sourceNpi: pdu.source_addr_npi,
		registeredDelivery: pdu.registered_delivery,
		text: decoded.text,
		submitDate: new Date(),
		finalDate: null,
		state: ENROUTE,
		timer: null,
		attempts: 0,
	};
	messages.set(respId, msg);
	messages.set(receiptId, msg);
	event.message_id = respId;
	event.receipt_id = receiptId;
	emit(event);
	const respond = () => {
		info.outstanding -= 1;
		info.session.send(pdu.response({message_id: respId}));
		if (outcome.stat !== null) {
			msg.timer = setTimeout(() => finalise(msg), settings.receipt_delay_ms);
		}
	};
	if (settings.resp_delay_ms > 0) {
		setTimeout(respond, settings.resp_delay_ms);
	} else {
		respond();
	}
}

function onQuery(info, pdu) {
	const msg = messages.get(pdu.message_id);
	emit({
		op: 'query', message_id: pdu.message_id, system_id: info.systemId, found: Boolean(msg),
		source_addr: pdu.source_addr, source_addr_ton: pdu.source_addr_ton,
		source_addr_npi: pdu.source_addr_npi, answer: settings.query_sm,
	});
	if (settings.query_sm === 'generic_nack') {
		info.session.send(new smpp.PDU('generic_nack', {
			sequence_number: pdu.sequence_number,
			command_status: ESME.RINVCMDID,
		}));
		return;
	}
	if (settings.query_sm !== 'answer') {
		const status = settings.query_sm === 'invcmdid' ? ESME.RINVCMDID : ESME.RQUERYFAIL;
		info.session.send(pdu.response({command_status: status}));
		return;
	}
	if (!msg) {
		info.session.send(pdu.response({command_status: ESME.RINVMSGID}));
		return;
	}
	const outcome = OUTCOMES[msg.outcome];
	const final = msg.finalDate !== null;
	info.session.send(pdu.response({
		message_id: pdu.message_id,
		final_date: final ? absoluteTime(msg.finalDate) : '',
		message_state: msg.state,
		error_code: final && outcome.err && msg.state !== DELETED ? Number(outcome.err) : 0,
	}));
}

function onCancel(info, pdu) {
	const msg = messages.get(pdu.message_id);
	let status = ESME.ROK;
	if (!msg) {
		status = ESME.RINVMSGID;
	} else if (msg.state !== ENROUTE ||
		(pdu.destination_addr && pdu.destination_addr !== msg.destination)) {
		status = ESME.RCANCELFAIL;
	} else {
		if (msg.timer) {
			clearTimeout(msg.timer);
			msg.timer = null;
		}
		msg.state = DELETED;
		msg.finalDate = new Date();
	}
	emit({op: 'cancel', message_id: pdu.message_id, system_id: info.systemId, status: status});
	info.session.send(pdu.response({command_status: status}));
}

function onPdu(info, pdu) {
	if (pdu.isResponse()) {
		return;
	}
	const session = info.session;
	switch (pdu.command) {
		case 'bind_transceiver':
		case 'bind_transmitter':
		case 'bind_receiver':
			onBind(info, pdu);
			return;
		case 'submit_sm':
			onSubmit(info, pdu);
			return;
		case 'query_sm':
			onQuery(info, pdu);
			return;
		case 'cancel_sm':
			onCancel(info, pdu);
			return;
		case 'enquire_link':
			emit({op: 'enquire_link', system_id: info.systemId});
			session.send(pdu.response());
			return;
		case 'unbind':
			emit({op: 'unbind', system_id: info.systemId});
			info.bind = null;
			session.send(pdu.response(), () => session.close());
			return;
		case 'outbind':
		case 'alert_notification':
			return;
		default:
			session.send(new smpp.PDU('generic_nack', {
				sequence_number: pdu.sequence_number,
				command_status: ESME.RINVCMDID,
			}));
	}
}

const server = smpp.createServer((session) => {
	const info = {session: session, systemId: null, bind: null, inflight: new Map(), outstanding: 0};
	session.socket.setNoDelay(true);
	sessions.add(info);
	session.on('error', (e) => {
		emit({op: 'session_error', system_id: info.systemId, message: String(e && e.message)});
	});
	session.on('close', () => {
		sessions.delete(info);
		emit({op: 'session_closed', system_id: info.systemId, bind: info.bind});
		const lost = [...info.inflight.values()];
		info.inflight.clear();
		for (const msg of lost) {
			setTimeout(() => queueReceipt(msg), settings.retry_ms);
		}
	});
	session.on('pdu', (pdu) => onPdu(info, pdu));
});

server.on('error', (e) => {
	emit({op: 'error', message: String(e && e.message)});
	process.exit(1);
});

// --- commands --------------------------------------------------------------------

const CONFIG_KEYS = {
	receipt_delay_ms: 'number',
	resp_delay_ms: 'number',
	retry_ms: 'number',
	hex_ids: 'boolean',
	default_outcome: 'string',
	password: 'string',
	bind_status: 'number',
	receipt_tlvs: 'boolean',
	query_sm: 'string',
};

function sessionList() {
	return [...sessions].filter((s) => s.bind).map((s) => ({system_id: s.systemId, bind: s.bind}));
}

function handleCommand(cmd) {
	switch (cmd.op) {
		case 'script': {
			if (typeof cmd.number !== 'string' || !Array.isArray(cmd.outcomes)) {
				throw new Error('script needs "number" (string) and "outcomes" (list)');
			}
			cmd.outcomes.forEach(checkWord);
			scripts.set(cmd.number, cmd.outcomes.slice());
			reply(cmd, {op: 'scripted', number: cmd.number, outcomes: cmd.outcomes});
			return;
		}
		case 'counts': {
			let total = 0;
			const out = {};
			for (const [number, n] of counts) {
				out[number] = n;
				total += n;
			}
			reply(cmd, {op: 'counts', counts: out, total: total});
			return;
		}
		case 'kick': {
			const all = [...sessions];
			for (const info of all) {
				if (cmd.graceful && info.bind) {
					// Ask for an unbind, but go down shortly whatever the peer does.
					const timer = setTimeout(() => info.session.destroy(), 500);
					info.session.unbind(() => {
						clearTimeout(timer);
						info.session.destroy();
					});
				} else {
					info.session.destroy();
				}
			}
			reply(cmd, {op: 'kicked', sessions: all.length});
			return;
		}
		case 'alert': {
			if (typeof cmd.number !== 'string') {
				throw new Error('alert needs "number" (string)');
			}
			const targets = [...sessions].filter((s) => canReceive(s) &&
				(cmd.system_id === undefined || s.systemId === cmd.system_id));
			for (const info of targets) {
				info.session.alert_notification({
					source_addr_ton: 1,
					source_addr_npi: 1,
					source_addr: cmd.number,
					esme_addr: '',
					ms_availability_status: cmd.ms_availability_status || 0,
				});
			}
			reply(cmd, {op: 'alert_sent', number: cmd.number, sessions: targets.length});
			return;
		}
		case 'config': {
			for (const key of Object.keys(cmd)) {
				if (key === 'op' || key === 'req') {
					continue;
				}
				const want = CONFIG_KEYS[key];
				const value = cmd[key];
				if (!want || !(typeof value === want || (key === 'password' && value === null))) {
					throw new Error('bad config key or value: ' + key);
				}
				if (key === 'default_outcome') {
					checkWord(value);
				}
				if (key === 'query_sm' && !QUERY_ANSWERS.includes(value)) {
					throw new Error('query_sm must be one of: ' + QUERY_ANSWERS.join(', '));
				}
				settings[key] = value;
			}
			reply(cmd, Object.assign({op: 'configured'}, settings));
			return;
		}
		case 'sessions':
			reply(cmd, {op: 'sessions', sessions: sessionList()});
			return;
		case 'outcomes':
			reply(cmd, {op: 'outcomes', outcomes: OUTCOMES});
			return;
		case 'exit':
			reply(cmd, {op: 'bye'});
			process.exit(0);
			return;
		default:
			throw new Error('unknown op: ' + cmd.op);
	}
}

function main() {
	try {
		parseArgs(process.argv.slice(2));
	} catch (e) {
		emit({op: 'error', message: e.message});
		process.exit(2);
	}
	nextId = 0;
	const input = readline.createInterface({input: process.stdin});
	input.on('line', (line) => {
		if (!line.trim()) {
			return;
		}
		let cmd = null;
		try {
			cmd = JSON.parse(line);
			handleCommand(cmd);
		} catch (e) {
			reply(cmd, {op: 'error', message: e.message});
		}
	});
	// The driving test process is gone: stop.
	input.on('close', () => process.exit(0));
	server.listen(settings.port, settings.host, () => {
		emit({op: 'listening', host: settings.host, port: server.address().port});
	});
}

main();
