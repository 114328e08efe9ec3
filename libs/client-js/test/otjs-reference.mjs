// A compact port of ot.js TextOperation (Tim Baumann, MIT): compose, transform and Selection's
// transformIndex, operating on UTF-16 strings as ot.js does. Used only as a reference: on texts made of
// BMP characters (where UTF-16 units and code points coincide) ot.js and our ot.js must agree exactly.

const isRetain = (o) => typeof o === 'number' && o > 0;
const isInsert = (o) => typeof o === 'string';
const isDelete = (o) => typeof o === 'number' && o < 0;

class TextOperation {
  constructor() {
    this.ops = [];
    this.baseLength = 0;
    this.targetLength = 0;
  }
  retain(n) {
    if (n === 0) return this;
    this.baseLength += n;
    this.targetLength += n;
    if (isRetain(this.ops[this.ops.length - 1])) this.ops[this.ops.length - 1] += n;
    else this.ops.push(n);
    return this;
  }
  insert(str) {
    if (str === '') return this;
    this.targetLength += str.length;
    const ops = this.ops;
    if (isInsert(ops[ops.length - 1])) {
      ops[ops.length - 1] += str;
    } else if (isDelete(ops[ops.length - 1])) {
      if (isInsert(ops[ops.length - 2])) ops[ops.length - 2] += str;
      else {
        ops[ops.length] = ops[ops.length - 1];
        ops[ops.length - 2] = str;
      }
    } else {
      ops.push(str);
    }
    return this;
  }
  delete(n) {
    if (typeof n === 'string') n = n.length;
    if (n === 0) return this;
    if (n > 0) n = -n;
    this.baseLength -= n;
    if (isDelete(this.ops[this.ops.length - 1])) this.ops[this.ops.length - 1] += n;
    else this.ops.push(n);
    return this;
  }
  static fromJSON(ops) {
    const o = new TextOperation();
    for (const op of ops) {
      if (isRetain(op)) o.retain(op);
      else if (isInsert(op)) o.insert(op);
      else if (isDelete(op)) o.delete(op);
      else if (op !== 0) throw new Error('unknown operation: ' + JSON.stringify(op));
    }
    return o;
  }

  compose(operation2) {
    const operation1 = this;
    if (operation1.targetLength !== operation2.baseLength) throw new Error('compose: lengths');
    const operation = new TextOperation();
    const ops1 = operation1.ops;
    const ops2 = operation2.ops;
    let i1 = 0;
    let i2 = 0;
    let op1 = ops1[i1++];
    let op2 = ops2[i2++];
    for (;;) {
      if (typeof op1 === 'undefined' && typeof op2 === 'undefined') break;
      if (isDelete(op1)) {
        operation.delete(op1);
        op1 = ops1[i1++];
        continue;
      }
      if (isInsert(op2)) {
        operation.insert(op2);
        op2 = ops2[i2++];
        continue;
      }
      if (typeof op1 === 'undefined' || typeof op2 === 'undefined') throw new Error('compose: too short');
      if (isRetain(op1) && isRetain(op2)) {
        if (op1 > op2) { operation.retain(op2); op1 = op1 - op2; op2 = ops2[i2++]; }
        else if (op1 === op2) { operation.retain(op1); op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { operation.retain(op1); op2 = op2 - op1; op1 = ops1[i1++]; }
      } else if (isInsert(op1) && isDelete(op2)) {
        if (op1.length > -op2) { op1 = op1.slice(-op2); op2 = ops2[i2++]; }
        else if (op1.length === -op2) { op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { op2 = op2 + op1.length; op1 = ops1[i1++]; }
      } else if (isInsert(op1) && isRetain(op2)) {
        if (op1.length > op2) { operation.insert(op1.slice(0, op2)); op1 = op1.slice(op2); op2 = ops2[i2++]; }
        else if (op1.length === op2) { operation.insert(op1); op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { operation.insert(op1); op2 = op2 - op1.length; op1 = ops1[i1++]; }
      } else if (isRetain(op1) && isDelete(op2)) {
        if (op1 > -op2) { operation.delete(op2); op1 = op1 + op2; op2 = ops2[i2++]; }
        else if (op1 === -op2) { operation.delete(op2); op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { operation.delete(op1); op2 = op2 + op1; op1 = ops1[i1++]; }
      } else {
        throw new Error('compose: unexpected');
      }
    }
    return operation;
  }

  static transform(operation1, operation2) {
    if (operation1.baseLength !== operation2.baseLength) throw new Error('transform: lengths');
    const operation1prime = new TextOperation();
    const operation2prime = new TextOperation();
    const ops1 = operation1.ops;
    const ops2 = operation2.ops;
    let i1 = 0;
    let i2 = 0;
    let op1 = ops1[i1++];
    let op2 = ops2[i2++];
    for (;;) {
      if (typeof op1 === 'undefined' && typeof op2 === 'undefined') break;
      if (isInsert(op1)) {
        operation1prime.insert(op1);
        operation2prime.retain(op1.length);
        op1 = ops1[i1++];
        continue;
      }
      if (isInsert(op2)) {
        operation1prime.retain(op2.length);
        operation2prime.insert(op2);
        op2 = ops2[i2++];
        continue;
      }
      if (typeof op1 === 'undefined' || typeof op2 === 'undefined') throw new Error('transform: too short');
      let minl;
      if (isRetain(op1) && isRetain(op2)) {
        if (op1 > op2) { minl = op2; op1 = op1 - op2; op2 = ops2[i2++]; }
        else if (op1 === op2) { minl = op2; op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { minl = op1; op2 = op2 - op1; op1 = ops1[i1++]; }
        operation1prime.retain(minl);
        operation2prime.retain(minl);
      } else if (isDelete(op1) && isDelete(op2)) {
        if (-op1 > -op2) { op1 = op1 - op2; op2 = ops2[i2++]; }
        else if (op1 === op2) { op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { op2 = op2 - op1; op1 = ops1[i1++]; }
      } else if (isDelete(op1) && isRetain(op2)) {
        if (-op1 > op2) { minl = op2; op1 = op1 + op2; op2 = ops2[i2++]; }
        else if (-op1 === op2) { minl = op2; op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { minl = -op1; op2 = op2 + op1; op1 = ops1[i1++]; }
        operation1prime.delete(minl);
      } else if (isRetain(op1) && isDelete(op2)) {
        if (op1 > -op2) { minl = -op2; op1 = op1 + op2; op2 = ops2[i2++]; }
        else if (op1 === -op2) { minl = op1; op1 = ops1[i1++]; op2 = ops2[i2++]; }
        else { minl = op1; op2 = op2 + op1; op1 = ops1[i1++]; }
        operation2prime.delete(minl);
      } else {
        throw new Error('transform: unexpected');
      }
    }
    return [operation1prime, operation2prime];
  }
}

/** ot.js compose on wire ops. */
export const refCompose = (a, b) => TextOperation.fromJSON(a).compose(TextOperation.fromJSON(b)).ops;

/** ot.js transform on wire ops. */
export function refTransform(a, b) {
  const [x, y] = TextOperation.transform(TextOperation.fromJSON(a), TextOperation.fromJSON(b));
  return [x.ops, y.ops];
}

/** ot.js Selection.Range transformIndex on wire ops. */
export function refTransformIndex(op, index) {
  const ops = TextOperation.fromJSON(op).ops;
  let newIndex = index;
  for (let i = 0; i < ops.length; i++) {
    if (isRetain(ops[i])) index -= ops[i];
    else if (isInsert(ops[i])) newIndex += ops[i].length;
    else {
      newIndex -= Math.min(index, -ops[i]);
      index += ops[i];
    }
    if (index < 0) break;
  }
  return newIndex;
}

/** ot.js fromJSON + normalising builder: the normal form of a wire op. */
export const refNormalize = (op) => TextOperation.fromJSON(op).ops;
