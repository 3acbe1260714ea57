'use strict';
/*
 * A sending application (ESME) stand-in for Bounceback's end-to-end tests,
 * built on the npm `smpp` package so that the proxy is exercised by code that
 * is not our own.
 *
 * Usage: node sender.js, then one JSON command per line on stdin; replies and
 * events are JSON lines on stdout. A reply echoes the command's "req" field
 * when it has one; events (deliver_sm, closed, ...) carry no "req".
 *
 * Commands:
 *   {"op":"connect","host":H,"port":P,"system_id":S,"password":W,
 *    "bind":"transceiver"|"transmitter"|"receiver", "system_type"?, "interface_version"?
 *    (default 0x34), "addr_ton"?, "addr_npi"?, "address_range"?, "enquire_link_ms"?}
 *       -> {"op":"bound","status":N,"system_id":...}  or {"op":"error","message":...}
 *   {"op":"submit","id":X, <submit_sm fields and TLVs by their node-smpp names>,
 *    "short_message_hex"?, "message_payload_hex"?}
 *       -> {"op":"submit_resp","id":X,"status":N,"message_id":...}
 *   {"op":"submit_many","count":N,"window":W,"destination_prefix":"4477009",
 *    "number_length":12,"destinations"?:[...],"source_addr"?,"short_message"? ("{i}" is
 *    replaced by the index),"registered_delivery"? (1),"data_coding"?}
 *       -> {"op":"submit_many_done","sent":N,"ok":K,"statuses":{"0":K,...},
 *           "message_ids":[id or null per message],"destinations":[...],"elapsed":s,
 *           "aborted":bool}
 *   {"op":"set_deliver_status","status":N,"count"?:C}  status for the next C (default:
 *       all following) deliver_sm_resp / data_sm_resp  -> {"op":"ok"}
 *   {"op":"drop_deliver","count"?:C}  leave the next C (default: all following)
 *       deliver_sm / data_sm unanswered (reported with "dropped":true)  -> {"op":"ok"}
 *   {"op":"set_silent","silent":B}  true: answer no request at all (deliver_sm,
 *       enquire_link, unbind ...; each is still reported)  -> {"op":"ok"}
 *   {"op":"query","message_id":M,"source_addr"?}   -> {"op":"query_resp",...}
 *   {"op":"cancel","message_id":M,"destination_addr"?,"source_addr"?} -> {"op":"cancel_resp",...}
 *   {"op":"enquire_link"}  -> {"op":"enquire_link_resp","status":N}
 *   {"op":"unbind"}        -> {"op":"unbind_resp","status":N} (then the socket is closed)
 *   {"op":"close"}         -> {"op":"close_done"} once the socket is closed
 *   {"op":"exit"}          -> {"op":"bye"}, then the process ends
 * Events:
 *   {"op":"deliver_sm", esm_class, source_addr, destination_addr, data_coding,
 *    short_message, short_message_hex, receipted_message_id, message_state,
 *    network_error_code: [type, code] | null, receipt: {id, sub, dlvrd, submit_date,
 *    done_date, stat, err, text} | null, resp_status, sequence_number}
 *   {"op":"data_sm",...}, {"op":"alert_notification",...}, {"op":"enquire_link"},
 *   {"op":"unbind"}, {"op":"generic_nack",...}, {"op":"error","message":...},
 *   {"op":"closed"}
 */

const readline = require('readline');
const smpp = require('smpp');

// Keep received bodies raw (decoded here, reported both as text and hex) and
// report query_sm_resp's final_date as the string on the wire.
delete smpp.commands.deliver_sm.params.short_message.filter;
delete smpp.commands.query_sm_resp.params.final_date.filter;

const ESME_RINVCMDID = 0x03;

function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + '\n');
}

function reply(cmd, obj) {
	if (cmd && cmd.req !== undefined) {
		obj.req = cmd.req;
	}
	emit(obj);
}

let session = null;
let connected = false;
let deliverStatus = 0;
let deliverStatusCount = null;
let dropCount = 0; // deliver_sm / data_sm left unanswered (null: all of them)
let silent = false; // no request is answered
// Requests waiting for a response: token -> function(reason) called if the
// connection goes away first.
const outstanding = new Map();
let nextToken = 0;
let closeWaiters = [];

function track(onLost) {
	const token = ++nextToken;
	outstanding.set(token, onLost);
	return token;
}

function settle(token) {
	return outstanding.delete(token);
}

function send(cmd, command, fields, onResponse) {
	if (!session || !connected) {
		reply(cmd, {op: 'error', message: 'not connected'});
		return;
	}
	const token = track(() => reply(cmd, {op: 'error', message: 'connection closed'}));
	const ok = session[command](fields, (pdu) => {
		if (settle(token)) {
			onResponse(pdu);
		}
	});
	if (!ok) {
		settle(token);
		reply(cmd, {op: 'error', message: 'not connected'});
	}
}

function decodeBody(buf, dataCoding, esmClass) {
	if (!Buffer.isBuffer(buf)) {
		if (buf && typeof buf.message === 'string') {
			return {text: buf.message, hex: null};
		}
		return {text: '', hex: ''};
	}
	let body = buf;
	if ((esmClass & 0x40) && body.length > 0) {
		body = body.slice(body[0] + 1);
	}
	let text;
	if (dataCoding === 0x08) {
		text = smpp.encodings.UCS2.decode(body);
	} else if (dataCoding === 0x00 || ((dataCoding & 0xF0) === 0xF0 && !(dataCoding & 0x04))) {
		text = smpp.gsmCoder.decode(body, 0);
	} else {
		text = body.toString('latin1');
	}
	return {text: text, hex: buf.toString('hex')};
}

const RECEIPT_LABELS = /(?:^|\s)(id|sub|dlvrd|submit date|done date|stat|err|text):/gi;

// Split an Appendix B receipt text by label position; "text" runs to the end.
function parseReceipt(text) {
	const found = [];
	let match;
	RECEIPT_LABELS.lastIndex = 0;
	while ((match = RECEIPT_LABELS.exec(text)) !== null) {
		const label = match[1].toLowerCase().replace(' ', '_');
		found.push({label: label, start: match.index, valueStart: match.index + match[0].length});
		if (label === 'text') {
			break;
		}
	}
	if (!found.some((f) => f.label === 'id') || !found.some((f) => f.label === 'stat')) {
		return null;
	}
	const receipt = {};
	found.forEach((f, i) => {
		const end = i + 1 < found.length ? found[i + 1].start : text.length;
		const value = text.slice(f.valueStart, end);
		receipt[f.label] = f.label === 'text' ? value : value.trim();
	});
	return receipt;
}

function networkErrorCode(value) {
	if (!Buffer.isBuffer(value) || value.length !== 3) {
		return value === undefined ? null : String(value);
	}
	return [value.readUInt8(0), value.readUInt16BE(1)];
}

function nextDeliverStatus() {
	const status = deliverStatus;
	if (deliverStatusCount !== null) {
		deliverStatusCount -= 1;
		if (deliverStatusCount <= 0) {
			deliverStatus = 0;
			deliverStatusCount = null;
		}
	}
	return status;
}

function unknownTlvs(pdu) {
	const out = {};
	for (const key of Object.keys(pdu)) {
		if (/^\d+$/.test(key) && Buffer.isBuffer(pdu[key])) {
			out['0x' + Number(key).toString(16).padStart(4, '0')] = pdu[key].toString('hex');
		}
	}
	return out;
}

function dropThisOne() {
	if (dropCount === null) {
		return true;
	}
	if (dropCount > 0) {
		dropCount -= 1;
		return true;
	}
	return false;
}

function reportMessage(pdu, status, dropped) {
	const body = Buffer.isBuffer(pdu.short_message) && pdu.short_message.length > 0 ?
		pdu.short_message : pdu.message_payload;
	const decoded = decodeBody(body, pdu.data_coding, pdu.esm_class);
	const isReceipt = (pdu.esm_class & 0x3C) !== 0;
	emit({
		op: pdu.command,
		esm_class: pdu.esm_class,
		source_addr: pdu.source_addr,
		destination_addr: pdu.destination_addr,
		data_coding: pdu.data_coding,
		registered_delivery: pdu.registered_delivery,
		short_message: decoded.text,
		short_message_hex: decoded.hex,
		receipted_message_id: pdu.receipted_message_id === undefined ? null : pdu.receipted_message_id,
		message_state: pdu.message_state === undefined ? null : pdu.message_state,
		network_error_code: networkErrorCode(pdu.network_error_code),
		receipt: isReceipt ? parseReceipt(decoded.text) : null,
		unknown_tlvs: unknownTlvs(pdu),
		resp_status: dropped ? null : status,
		dropped: Boolean(dropped),
		sequence_number: pdu.sequence_number,
	});
}

function onPdu(pdu) {
	if (pdu.isResponse()) {
		if (pdu.command === 'generic_nack') {
			emit({op: 'generic_nack', status: pdu.command_status, sequence_number: pdu.sequence_number});
		}
		return;
	}
	switch (pdu.command) {
		case 'deliver_sm':
		case 'data_sm': {
			if (silent || dropThisOne()) {
				reportMessage(pdu, 0, true);
				return;
			}
			const status = nextDeliverStatus();
			if (status) {
				session.send(pdu.response({command_status: status}));
			} else {
				session.send(pdu.response({message_id: ''}));
			}
			reportMessage(pdu, status);
			return;
		}
		case 'enquire_link':
			if (!silent) {
				session.send(pdu.response());
			}
			emit({op: 'enquire_link', dropped: silent});
			return;
		case 'unbind': {
			if (silent) {
				emit({op: 'unbind', dropped: true});
				return;
			}
			const s = session;
			s.send(pdu.response(), () => s.close());
			emit({op: 'unbind'});
			return;
		}
		case 'alert_notification':
			emit({
				op: 'alert_notification',
				source_addr: pdu.source_addr,
				source_addr_ton: pdu.source_addr_ton,
				source_addr_npi: pdu.source_addr_npi,
				esme_addr: pdu.esme_addr,
				ms_availability_status:
					pdu.ms_availability_status === undefined ? null : pdu.ms_availability_status,
			});
			return;
		case 'outbind':
			emit({op: 'outbind', system_id: pdu.system_id});
			return;
		default:
			session.send(new smpp.PDU('generic_nack', {
				sequence_number: pdu.sequence_number,
				command_status: ESME_RINVCMDID,
			}));
			emit({op: 'unexpected', command: pdu.command, command_id: pdu.command_id});
	}
}

const BINDS = {
	transceiver: 'bind_transceiver',
	transmitter: 'bind_transmitter',
	receiver: 'bind_receiver',
};

function connect(cmd) {
	if (session) {
		reply(cmd, {op: 'error', message: 'already connected'});
		return;
	}
	const bindCommand = BINDS[cmd.bind || 'transceiver'];
	if (!bindCommand) {
		reply(cmd, {op: 'error', message: 'unknown bind type: ' + cmd.bind});
		return;
	}
	const options = {host: cmd.host || '127.0.0.1', port: cmd.port};
	if (cmd.enquire_link_ms) {
		options.auto_enquire_link_period = cmd.enquire_link_ms;
	}
	let answered = false;
	const s = smpp.connect(options);
	// Small PDUs one at a time: do not let Nagle's algorithm hold them back.
	s.socket.setNoDelay(true);
	session = s;
	s.on('connect', () => {
		connected = true;
		const fields = {
			system_id: cmd.system_id || '',
			password: cmd.password || '',
			system_type: cmd.system_type || '',
			interface_version: cmd.interface_version === undefined ? 0x34 : cmd.interface_version,
			addr_ton: cmd.addr_ton || 0,
			addr_npi: cmd.addr_npi || 0,
			address_range: cmd.address_range || '',
		};
		send(cmd, bindCommand, fields, (resp) => {
			answered = true;
			reply(cmd, {
				op: 'bound',
				status: resp.command_status,
				system_id: resp.system_id === undefined ? null : resp.system_id,
			});
		});
	});
	s.on('pdu', onPdu);
	s.on('error', (e) => {
		const message = String(e && e.message);
		if (!connected && !answered) {
			answered = true;
			reply(cmd, {op: 'error', message: message});
		} else {
			emit({op: 'error', message: message});
		}
	});
	s.on('close', () => {
		if (session === s) {
			session = null;
			connected = false;
		}
		const lost = [...outstanding.values()];
		outstanding.clear();
		lost.forEach((onLost) => onLost());
		emit({op: 'closed'});
		const waiters = closeWaiters;
		closeWaiters = [];
		waiters.forEach((w) => w());
	});
}

function submitFields(cmd) {
	const params = smpp.commands.submit_sm.params;
	const fields = {};
	for (const key of Object.keys(cmd)) {
		if (key === 'op' || key === 'id' || key === 'req') {
			continue;
		}
		if (key === 'short_message_hex') {
			fields.short_message = Buffer.from(cmd[key], 'hex');
		} else if (key === 'message_payload_hex') {
			fields.message_payload = Buffer.from(cmd[key], 'hex');
		} else if (key in params || key in smpp.tlvs) {
			fields[key] = cmd[key];
		} else {
			throw new Error('unknown submit_sm field: ' + key);
		}
	}
	return fields;
}

function submit(cmd) {
	const fields = submitFields(cmd);
	send(cmd, 'submit_sm', fields, (resp) => {
		const out = {
			op: 'submit_resp',
			id: cmd.id === undefined ? null : cmd.id,
			status: resp.command_status,
			message_id: resp.message_id === undefined ? null : resp.message_id,
			sequence_number: resp.sequence_number,
		};
		if (resp.command !== 'submit_sm_resp') {
			out.command = resp.command;
		}
		reply(cmd, out);
	});
}

function destinationFor(cmd, i) {
	if (Array.isArray(cmd.destinations) && cmd.destinations.length > 0) {
		return cmd.destinations[i % cmd.destinations.length];
	}
	const prefix = cmd.destination_prefix || '4477009';
	const width = Math.max(1, (cmd.number_length || 12) - prefix.length);
	return prefix + String(i).padStart(width, '0');
}

function submitMany(cmd) {
	if (!session || !connected) {
		reply(cmd, {op: 'error', message: 'not connected'});
		return;
	}
	const count = cmd.count;
	const window = Math.max(1, cmd.window || 10);
	const text = cmd.short_message === undefined ? 'message {i}' : cmd.short_message;
	const messageIds = new Array(count).fill(null);
	const destinations = [];
	const statuses = {};
	const started = process.hrtime.bigint();
	let sent = 0;
	let answered = 0;
	let ok = 0;
	let inflight = 0;
	let done = false;

	const finish = (aborted) => {
		if (done) {
			return;
		}
		done = true;
		reply(cmd, {
			op: 'submit_many_done',
			sent: sent,
			answered: answered,
			ok: ok,
			statuses: statuses,
			message_ids: messageIds,
			destinations: destinations,
			elapsed: Number(process.hrtime.bigint() - started) / 1e9,
			aborted: aborted,
		});
	};

	const pump = () => {
		while (!done && inflight < window && sent < count) {
			const i = sent;
			const destination = destinationFor(cmd, i);
			destinations.push(destination);
			const fields = {
				source_addr: cmd.source_addr || 'Bench',
				destination_addr: destination,
				short_message: String(text).split('{i}').join(String(i)),
				registered_delivery: cmd.registered_delivery === undefined ? 1 : cmd.registered_delivery,
			};
			if (cmd.data_coding !== undefined) {
				fields.data_coding = cmd.data_coding;
			}
			const token = track(() => finish(true));
			sent += 1;
			inflight += 1;
			const queued = session && session.submit_sm(fields, (resp) => {
				if (!settle(token)) {
					return;
				}
				inflight -= 1;
				answered += 1;
				const key = String(resp.command_status);
				statuses[key] = (statuses[key] || 0) + 1;
				if (resp.command_status === 0 && resp.command === 'submit_sm_resp') {
					ok += 1;
					messageIds[i] = resp.message_id === undefined ? null : resp.message_id;
				}
				if (answered === count) {
					finish(false);
				} else {
					pump();
				}
			});
			if (!queued) {
				settle(token);
				finish(true);
				return;
			}
		}
	};
	if (count <= 0) {
		finish(false);
		return;
	}
	pump();
}

function handleCommand(cmd) {
	switch (cmd.op) {
		case 'connect':
			connect(cmd);
			return;
		case 'submit':
			submit(cmd);
			return;
		case 'submit_many':
			submitMany(cmd);
			return;
		case 'set_deliver_status':
			deliverStatus = cmd.status || 0;
			deliverStatusCount = cmd.count === undefined ? null : cmd.count;
			reply(cmd, {op: 'ok'});
			return;
		case 'drop_deliver':
			dropCount = cmd.count === undefined ? null : cmd.count;
			reply(cmd, {op: 'ok'});
			return;
		case 'set_silent':
			silent = Boolean(cmd.silent);
			reply(cmd, {op: 'ok'});
			return;
		case 'query':
			send(cmd, 'query_sm', {
				message_id: cmd.message_id,
				source_addr: cmd.source_addr || '',
			}, (resp) => {
				reply(cmd, {
					op: 'query_resp',
					status: resp.command_status,
					message_id: resp.message_id === undefined ? null : resp.message_id,
					final_date: resp.final_date === undefined ? null : resp.final_date,
					message_state: resp.message_state === undefined ? null : resp.message_state,
					error_code: resp.error_code === undefined ? null : resp.error_code,
				});
			});
			return;
		case 'cancel':
			send(cmd, 'cancel_sm', {
				message_id: cmd.message_id,
				source_addr: cmd.source_addr || '',
				destination_addr: cmd.destination_addr || '',
			}, (resp) => reply(cmd, {op: 'cancel_resp', status: resp.command_status}));
			return;
		case 'enquire_link':
			send(cmd, 'enquire_link', {}, (resp) => {
				reply(cmd, {op: 'enquire_link_resp', status: resp.command_status});
			});
			return;
		case 'unbind': {
			const s = session;
			send(cmd, 'unbind', {}, (resp) => {
				reply(cmd, {op: 'unbind_resp', status: resp.command_status});
				s.close();
			});
			return;
		}
		case 'close':
			if (!session) {
				reply(cmd, {op: 'close_done'});
				return;
			}
			closeWaiters.push(() => reply(cmd, {op: 'close_done'}));
			session.close();
			return;
		case 'exit':
			reply(cmd, {op: 'bye'});
			process.exit(0);
			return;
		default:
			throw new Error('unknown op: ' + cmd.op);
	}
}

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
